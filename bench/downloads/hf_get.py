"""hf_transfer as huggingface_hub drives it: python hf_get.py URL FILE MAX_FILES CHUNK_BYTES."""
import sys

from hf_transfer import download

url, filename, max_files, chunk_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
# huggingface_hub passes parallel_failures=3, max_retries=5; neither matters without failures.
download(url=url, filename=filename, max_files=max_files, chunk_size=chunk_size, parallel_failures=3, max_retries=5)
