"""Knowledge incorporation (the paper's SQuAD experiment): passages and their closed-book
questions (`data`), closed-book QA and its grading (`qa`, `grading`, `judge`), self-edit formats
and their sampling (`self_edit`, `faithfulness`), who writes a benchmark's self-edits (`writers`),
and the domain the outer loop trains (`domain.KnowledgeDomain`)."""
