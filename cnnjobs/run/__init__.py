"""The run folder and its one owner: where each file lives (`layout`), the typed summary (`summary`), the writer of
each file kind (`folder`), a run's life from its first summary to its last (`lifecycle`), checkpoints
(`checkpoints`), and finding and reading runs (`find`). Every read and write goes through `cnnjobs.storage`, so a
run folder works the same on a local disk and on s3:// or gs://."""
