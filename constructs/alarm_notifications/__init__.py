from .alarm_topic import AlarmTopic

__all__ = ["AlarmTopic"]
