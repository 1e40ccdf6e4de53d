"""Generators that write small synthetic copies of each dataset in its real on-disk layout,
for tests and demos (nothing is ever downloaded). The real loaders read what they write."""
