"""tracker/ops"""
