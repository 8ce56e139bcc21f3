"""yivl.evaluation"""
