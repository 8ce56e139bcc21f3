"""yivl.serving"""
