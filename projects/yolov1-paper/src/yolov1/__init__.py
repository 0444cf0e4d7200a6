"""YOLOv1 as the paper describes it (Redmon et al., CVPR 2016, arXiv 1506.02640).

Modules, each runnable as ``python -m yolov1.<module>`` where it makes sense:

- ``model``: the 24 conv + 2 FC network, its 20-conv backbone and the 224 px pretraining classifier.
- ``loss``: the paper's sum-squared loss; ``targets``: GT -> per-cell targets; ``boxes``: box helpers.
- ``postprocess``: decode the S x S x (5B + C) tensor, threshold, NMS.
- ``scheduler``: the paper's warm-up + step learning rate.
- ``imagenet100`` / ``voc``: datasets; ``augment``: the paper's scale/translate + HSV augmentation.
- ``engine``: ``train_one_epoch`` / ``evaluate_*``; ``metrics``: top-k, VOC and COCO mAP.
- ``pretrain_train`` / ``detection_train``: accelerate CLIs; ``extract_backbone``; ``smoke``; ``bench``.

Importing the package loads nothing heavy and changes no global state.
"""

__version__ = "0.1.0"
