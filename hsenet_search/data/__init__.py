"""hsenet_search/data: volumes, CT-RATE reader/writer, manifests, preprocessing, cache, synthetic data, labels"""
