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
    "webdav": ["webdav4>=0.10", "httpx>=0.27", "httpcore>=1.0"],  # httpcore: the paced transport
    "s3": ["boto3>=1.34"],
    "node": ["httpx>=0.27"],  # cm:// hosts: other nodes' `cm serve`
    "postgres": ["psycopg[binary]>=3.1"],  # a catalog on PostgreSQL, shared by a fleet of nodes
    # `cm serve`: Range-capable FileResponse, login form parsing, the page's templates
    # /metrics: prometheus-client
    "serve": ["starlette>=1.5.1", "uvicorn>=0.29", "jinja2>=3.1", "python-multipart>=0.0.9",
              "prometheus-client>=0.17"],
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
    package_data={"cloudmanager": ["schema.sql", "schema_pg.sql", "py.typed", "server/templates/*.html"]},
    install_requires=[
        "plowshare==0.3.6",  # the "plowshare-wrapper": file lockers through plowup/plowdown
        "platformdirs>=3",
        "click>=8.1",  # the cm command
        "rich>=13",  # its tables and progress bars
        "tomlkit>=0.12",  # cm relocate rewrites the configuration, comments kept
        "cryptography>=42",  # client-side encryption: ChaCha20-Poly1305, HKDF (crypto.py)
        "zfec>=1.5",  # erasure coding of spread files, as Tahoe-LAFS does it (erasure.py)
        "ijson>=3.2",  # catalog pages parsed as they arrive, within a bound (payload.py)
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
        "selenium>=4.15",  # the page, in a real (headless) Chromium
        "psycopg[binary]>=3.1",
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
