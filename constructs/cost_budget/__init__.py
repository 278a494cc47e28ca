from .monthly_budget import MonthlyCostBudget

__all__ = ["MonthlyCostBudget"]
