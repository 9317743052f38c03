"""Client for OpenAI-compatible chat endpoints, and the grading prompt built on it."""

from grading.llm.client import ChatReply, LLMClient, ReplyCache, Usage, image_part, reply_schema
from grading.llm.prompt import (
    GRADE_SCHEMA,
    PROMPT_VERSION,
    GradeReply,
    LLMGrade,
    grade_messages,
    validate_grade,
)
from grading.llm.settings import LLMSettings, load_settings

__all__ = ["ChatReply", "GRADE_SCHEMA", "GradeReply", "LLMClient", "LLMGrade", "LLMSettings", "PROMPT_VERSION",
           "ReplyCache", "Usage", "grade_messages", "image_part", "load_settings", "reply_schema", "validate_grade"]
