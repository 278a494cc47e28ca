from .experiment import ExperimentAction, FisExperiment
from .experiments import AzOutageExperiment, NetworkFaultsExperiment, StopTasksExperiment, slo_stop_condition

__all__ = ["AzOutageExperiment", "ExperimentAction", "FisExperiment", "NetworkFaultsExperiment", "StopTasksExperiment",
           "slo_stop_condition"]
