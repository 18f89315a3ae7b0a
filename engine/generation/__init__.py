"""Generation: loading the LLM and the one worker thread that runs it."""
