"""A stand-in for the reference client users are given, written from its documented behaviour.

Usage: python iWebLens_client.py <inputfolder> <endpoint> <num_threads>

Like the original: it globs <inputfolder>/*.jpg, POSTs each file as multipart/form-data with one
part named ``image`` (filename = basename, content type left to requests), never closes the file
handle, runs a ThreadPoolExecutor over the images, prints every raw response, and ends with
``Total client script time: <wall>, average thread time: <sum of request times / images>``.
"""

import glob
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def call_object_detection_service(image):
    try:
        url = str(sys.argv[2])
        files = {"image": (os.path.basename(image), open(image, "rb"))}  # noqa: SIM115
        start = time.time()
        response = requests.post(url, files=files)
        elapsed = time.time() - start
        if response.ok:
            print(response.text)
        else:
            print(f"Error, response status:{response}")
        return elapsed
    except Exception as error:
        print(f"Exception in webservice call: {error}")
        return 0.0


def main():
    input_folder = sys.argv[1]
    num_threads = int(sys.argv[3])
    images = glob.glob(os.path.join(input_folder, "*.jpg"))
    start = time.time()
    with ThreadPoolExecutor(max_workers=num_threads) as executor:
        times = list(executor.map(call_object_detection_service, images))
    wall = time.time() - start
    print(f"Total client script time: {wall}, average thread time: {sum(times) / len(images)}")


if __name__ == "__main__":
    main()
