"""Pieces several tasks share. They sit below every task package and import none of them."""
