"""cherrybench: score instruction data with every published selection metric,
select subsets, fine-tune and evaluate each the same way, and compare in MLflow."""

__version__ = "0.1.0"
