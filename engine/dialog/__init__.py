"""Dialog: cleaning what comes in and goes out, history, persona and prompt assembly."""
