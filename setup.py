"""ament_python packaging: one ROS 2 package shipping skp_core, skp_ros and offline_tools."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "skp_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(
        include=[
            "skp_core",
            "skp_core.*",
            "skp_ros",
            "skp_ros.*",
            "offline_tools",
            "offline_tools.*",
        ]
    ),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        # skp_ros.fastdds_profile looks for the profile here: <prefix>/share/skp_ros/config
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    extras_require={"test": ["pytest"]},
    zip_safe=False,
    maintainer="skp maintainers",
    maintainer_email="maintainers@skp.invalid",
    description="StableKeypoints for robots: unsupervised keypoints from Stable Diffusion",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "image_source = skp_ros.image_source:main",
            "skp-bench = skp_core.benchmark_cli:main",
            "keypoint_node = skp_ros.keypoint_node:main",
            "skp-train = offline_tools.train:main",
            "skp-replay = skp_ros.replay:main",
            "skp-node-bench = skp_ros.node_benchmark:main",
            "skp-fastdds-profile = skp_ros.fastdds_profile:main",
        ],
    },
)
