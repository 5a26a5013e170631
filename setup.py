from setuptools import find_packages, setup

setup(
    name="lr-weights",
    version="0.1.0",
    description="Drop-in sd-scripts network module: LoRA, LoCon and DyLoRA with block-wise learning rates",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.8",
    # `networks/` holds copy-in shims for an sd-scripts checkout; installing it as a top-level
    # package would shadow sd-scripts' own `networks`.
    packages=find_packages(include=["lr_weights", "lr_weights.*"]),
    package_data={"lr_weights": ["data/*.json"]},
    # torch belongs to the user's sd-scripts environment: wide lower bounds, never pins.
    install_requires=["torch>=1.12", "safetensors>=0.3"],
    extras_require={
        "plot": ["matplotlib>=3.3"],
        "progress": ["tqdm>=4.0"],
        "diffusers": ["diffusers>=0.20", "transformers>=4.25", "peft>=0.6"],
        "test": ["pytest>=7", "hypothesis>=6", "tomli>=1.1; python_version<'3.11'"],
    },
    entry_points={"console_scripts": ["lr-weights=lr_weights.cli:main"]},
)
