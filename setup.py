"""mixprior: knowledge distillation for super-resolution (MiPKD and baselines) on BasicSR."""
from setuptools import find_packages, setup

setup(
    name='mixprior',
    version='0.1.0',
    description='MiPKD (multi-granularity mixture of priors KD) and SR-KD baselines as a BasicSR plugin',
    long_description=open('README.md', encoding='utf-8').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['mixprior_plugin', 'mixprior_plugin.*']),
    python_requires='>=3.9',
    # basicsr itself is deliberately not listed: pip would resolve basicsr-fixed's metadata, which
    # pulls tb-nightly and builds torch in an isolated env. Install it with
    #   pip install --no-deps --no-build-isolation basicsr-fixed==1.4.2
    # (tools/setup_env.sh does this).
    install_requires=[
        'torch>=2.0', 'torchvision', 'mmengine', 'opencv-python', 'lmdb', 'tensorboard', 'numpy',
        'scipy', 'pyyaml', 'tqdm', 'requests',
    ],
    # export: safetensors / ONNX export and onnxruntime parity (versions tested: requirements-extras.txt);
    # spandrel is only needed by the tests that check chaiNNer/ComfyUI loading.
    extras_require={'demo': ['scikit-image', 'matplotlib'],
                    'export': ['onnx', 'onnxscript', 'onnxruntime', 'safetensors'],
                    'test': ['pytest', 'onnx', 'onnxscript', 'onnxruntime', 'safetensors', 'spandrel']},
    entry_points={
        'console_scripts': [
            'mixprior-train=mixprior_plugin.train:main',
            'mixprior-test=mixprior_plugin.test:main',
            'mixprior-export=mixprior_plugin.export:main',
        ],
    },
)
