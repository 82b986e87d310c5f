"""The reference solution of each lesson's exercises: the names of workspace/lessonNN.py, bound to
(or written as thin adapters over) aios's own code. Read it after trying."""
