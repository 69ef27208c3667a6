"""Defences for the case screening cannot fix: availability poisons sit in every class, so no
row stands out. Supervised training (plain and PGD-adversarial, ``supervised``), SimCLR
contrastive learning with a linear probe (``ssl``), and VESPR, SimCLR guided by an adversarially
attacked supervised head (``vespr``); ``models`` holds the encoders, ``toy`` the synthetic class
sets the tests use. The CLI is ``alignscope defend vespr``.
"""
