"""Your code: one file per lesson (lessonNN.py), stubs until you write them. Check a lesson with
`python lessons/check.py NN`; see workspace/README.md."""
