"""The review step: reviewers sign in, see ready cases with their candidates, and decide."""
