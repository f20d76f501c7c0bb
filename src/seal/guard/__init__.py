"""What the model must not lose while it learns: the golden copy's answers rehearsed as anchors
(`anchors`), generative general questions (`general`), the log-likelihood canary and held-out
perplexity (`canary`), and the forgetting guard that checks every new version against budgets
before it becomes head (`check`)."""
