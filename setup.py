"""Packaging for DMI-Rec: Diffusion Multi-Interest retrieval on TFX / TensorFlow."""

from setuptools import find_packages, setup

setup(
    name="dmi-rec",
    version="0.1.0",
    description=(
        "DMI (Diffusion Multi-Interest, Le et al., SIGIR 2025) retrieval as a TFX pipeline, "
        "a Keras two-tower model, and a TF Serving gRPC service."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["trainer", "trainer.*", "pipeline", "pipeline.*", "serving", "serving.*", "bench", "bench.*"]),
    include_package_data=True,
    package_data={"": ["*.pbtxt"]},
    install_requires=[
        "tfx==1.16.0",
        "tensorflow==2.16.2",
        "tf-keras==2.16.0",
        "tensorflow-recommenders==0.7.7",
        "scann==1.3.2",
        "apache-beam[gcp]==2.61.0",
        "tensorflow-transform==1.16.0",
        "tfx-bsl==1.16.1",
        "tensorflow-data-validation==1.16.1",
        "tensorflow-model-analysis==0.47.1",
        "ml-metadata==1.16.0",
        "tensorflow-serving-api==2.16.1",
        "kfp==2.7.0",
        "kfp-pipeline-spec==0.3.0",
        "protobuf==4.25.5",
        "numpy==1.26.4",
        "pyarrow==10.0.1",
        "grpcio",
        "tqdm",
        "matplotlib",
    ],
    extras_require={"dev": ["pytest"]},
    entry_points={
        "console_scripts": ["dmirec=pipeline.cli:main"],
        # The commands of ``dmirec``, each registered by the package that owns it (``pipeline/cli.py``
        # loads only the one being run); ``dmirec --help`` lists them by name.
        "dmirec.commands": [
            "data=trainer.cli:add_data_command",
            "train=trainer.cli:add_train_command",
            "evaluate=trainer.cli:add_evaluate_command",
            "export=trainer.cli:add_export_command",
            "run=pipeline.commands:add_run_command",
            "compile-kfp=pipeline.commands:add_compile_kfp_command",
            "serve=serving.cli:add_serve_command",
            "query=serving.cli:add_query_command",
            "demo=pipeline.commands:add_demo_command",
            "bench=bench.cli:add_bench_command",
        ],
    },
)
