# Style Studio in a container: CUDA-capable PyTorch from PyPI (its wheels carry the CUDA user-space libraries,
# so the host needs only the NVIDIA driver and the NVIDIA Container Toolkit: docker run --gpus all ...).
FROM python:3.12-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    HOME=/home/user \
    HF_HOME=/home/user/.cache/huggingface \
    PATH=/home/user/.local/bin:$PATH

# Hugging Face Spaces and good practice: run as a non-root user with uid 1000, who also owns the app folder
# (pip writes the project's build metadata there; the legacy builder would create WORKDIR owned by root).
RUN useradd --create-home --uid 1000 user && install -d -o user -g user /home/user/app
USER 1000
WORKDIR /home/user/app

# Dependencies first, so that code changes rebuild only the last layers.
COPY --chown=1000:1000 requirements.txt .
RUN pip install --user --no-cache-dir -r requirements.txt

COPY --chown=1000:1000 . .
# The project itself, editable (the code stays in this folder, one copy, assets/ next to demo.py): the
# style-studio and style-studio-cli commands and `import pipelines` from any folder. Its dependencies are above.
# Weights (Hugging Face cache, converted checkpoints, learned styles) live on a volume, not in the image.
RUN pip install --user --no-cache-dir --no-deps -e . \
    && mkdir -p /home/user/.cache/huggingface /home/user/.cache/style-studio
VOLUME ["/home/user/.cache"]

EXPOSE 7860
# Loading a diffusion model can take a while on first start: a long start period.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/gradio_api/info', timeout=4)"]
CMD ["python", "demo.py"]
