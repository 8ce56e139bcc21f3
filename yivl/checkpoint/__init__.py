"""yivl.checkpoint"""
