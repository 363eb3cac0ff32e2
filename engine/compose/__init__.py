"""Compose stacks: the file's common subset read into a normalised, typed form
(``model``) and the pure decision of what to do to converge (``plan``)."""
