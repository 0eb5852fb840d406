"""What a study shows: the report folder, its tables, figures and HTML, the live report, exports, TensorBoard."""
