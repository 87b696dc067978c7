"""checkpoints/io"""
