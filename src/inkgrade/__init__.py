"""What composes handwriting recognition (``htr``) and rubric grading (``grading``): the scanned-exam
pipeline, the handwritten-answer benchmark, the exam workflow and review app, page grading and answer
tables. Nothing below this package imports it."""
