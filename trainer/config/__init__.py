"""trainer/config"""
