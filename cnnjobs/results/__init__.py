"""What is derived from a run: its epochs summarized, pictures, TensorBoard events, and a trained model's uses
(predict, export, visualize, compare). The run folder itself is `cnnjobs.run`'s."""
