"""Vision-model page grading (Cvengros & Kortemeyer): whole pages and their rubric to points, with repeated runs."""
