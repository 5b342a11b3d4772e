"""Packaging of cloudmanager: ``pip install .`` gives the library and its commands."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
version = next(
    line.split('"')[1]
    for line in (HERE / "cloudmanager" / "__init__.py").read_text().splitlines()
    if line.startswith("__version__")
)

#: Optional host kinds and the libraries they need (``pip install cloudmanager[sftp]``).
EXTRAS = {
    "sftp": ["paramiko>=3.4"],
    "webdav": ["webdav4>=0.10", "httpx>=0.27"],
    "s3": ["boto3>=1.34"],
}

setup(
    name="cloudmanager",
    version=version,
    description="Keep a pool of files on several storage hosts, with a local LRU cache "
    "and a catalog that nodes share",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["cloudmanager", "cloudmanager.*"]),
    package_data={"cloudmanager": ["schema.sql", "py.typed"]},
    install_requires=[
        "plowshare==0.3.6",  # the "plowshare-wrapper": file lockers through plowup/plowdown
        "platformdirs>=3",
        "click>=8.1",  # the cm command
        "rich>=13",  # its tables and progress bars
        "tomlkit>=0.12",  # cm relocate rewrites the configuration, comments kept
        'tomli>=2; python_version < "3.11"',
    ],
    extras_require=dict(EXTRAS, all=sorted({dep for deps in EXTRAS.values() for dep in deps}), develop=[
        *sorted({dep for deps in EXTRAS.values() for dep in deps}),
        "pytest>=7",
        "hypothesis>=6",
        "tox>=4",
        "ruff>=0.4",
        "mypy>=1.8",
        "diskcache>=5.6",  # the peer in benchmarks/
        # the real servers the tests start on 127.0.0.1
        "wsgidav>=4.3",
        "cheroot>=10",
        "moto[server]>=5",
        "boto3-stubs[s3]>=1.34",
        "types-paramiko>=3",
        "tomli>=2",  # for mypy's Python 3.10 view of config.py
    ]),
    entry_points={
        "console_scripts": [
            "cm_setup_db = cloudmanager.setup_db:main",
            "cm = cloudmanager.cli:main",
        ],
    },
    classifiers=[
        "Programming Language :: Python :: 3",
        "License :: OSI Approved :: MIT License",
        "Operating System :: POSIX",
        "Topic :: System :: Archiving :: Backup",
    ],
)
