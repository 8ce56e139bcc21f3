"""yivl.models"""
