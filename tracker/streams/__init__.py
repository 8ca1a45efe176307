"""tracker/streams"""
