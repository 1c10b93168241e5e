from setuptools import find_packages, setup

setup(
    name="charrnn",
    version="0.2.0",
    description="Character-level recurrent networks: train on any text, then sample from it.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["charrnn", "charrnn.*"]),
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "tokenizers>=0.15",
        "datasets>=2.14",
        "tqdm>=4.60",
        "click>=8.0",
        "numpy>=1.22",
        "safetensors>=0.4",
        "matplotlib>=3.5",       # loss.png and charrnn plot (imported only when drawing)
        "pydivsufsort>=0.0.20",  # the memorisation check's suffix array (imported only there)
        # charrnn serve (imported only when serving)
        "fastapi>=0.110",
        "uvicorn>=0.29",
        # charrnn export (imported only when exporting): torch.onnx's exporter and the check
        "onnx>=1.16",
        "onnxscript>=0.3",
        "onnxruntime>=1.18",
    ],
    package_data={"charrnn.serve": ["playground.html"]},
    extras_require={"dev": ["pytest>=7", "hypothesis>=6", "selenium>=4.20",
                            "httpx>=0.27"]},   # httpx: Starlette's TestClient
    entry_points={"console_scripts": ["charrnn=charrnn.__main__:main"]},
)
