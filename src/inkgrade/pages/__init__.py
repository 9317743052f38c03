"""Vision-model page grading (seed 001): whole pages and their rubric to points, with repeated runs."""
