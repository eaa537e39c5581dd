"""The course's hw2 optimizer goldens in numpy mode (where the course runs them)."""
from tests.test_course_goldens import CASES, test_final_loss_matches_the_course_golden  # noqa: F401
