"""yivl.data"""
