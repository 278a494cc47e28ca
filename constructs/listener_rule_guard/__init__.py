from .listener_rule_guard import GuardedRule, ListenerRuleGuard

__all__ = ["GuardedRule", "ListenerRuleGuard"]
