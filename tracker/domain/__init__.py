"""tracker/domain"""
