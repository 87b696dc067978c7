"""trainer/optim"""
