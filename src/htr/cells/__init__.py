"""Reading one handwritten letter or digit in a printed answer-table cell (Grabowski & Canz).

``data`` renders training cells (handwriting fonts, MNIST digits, empty and crossed-out cells),
``model`` is the small CNN and its weights file, ``train`` trains and calibrates it, ``reader`` loads
the shipped weights and turns cell crops into calibrated class probabilities.
"""
