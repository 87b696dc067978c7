"""trainer/runs"""
