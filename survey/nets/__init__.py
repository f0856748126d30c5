"""Reconstruction networks: the zoo (survey.nets.zoo) and bring-your-own loading (survey.nets.byo)."""
