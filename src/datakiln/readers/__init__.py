"""Reading raw inputs: listing sources, decoding images, text and audio, and rejections."""
