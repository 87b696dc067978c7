"""trainer/training"""
