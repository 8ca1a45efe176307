"""tracker/contract"""
