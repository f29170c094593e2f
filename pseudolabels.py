"""Pseudo-labels for CLAR's unlabelled clips (train.py --pseudo_labels=fixed|per_class).

Self-training on top of the contrastive and supervised losses: each step, the clips of the
batch go through the model once more, without gradient, as a weak view; where an
unlabelled clip's top class probability reaches its threshold, that class becomes the
target of the cross-entropy of the clip's two augmented (strong) views, the CLAR views the
step trains on anyway (FixMatch, Sohn et al. 2020).

    weak view: the clip as it is (--pseudo_weak_view=none), or circularly shifted
               (time_shift): the prediction that decides the target should be the
               model's best guess, so the weak view is the one closest to the clips it is
               validated on; the shift is the one augmentation that leaves every sample
               of a word as it was
    thresholds: fixed, one for every class (FixMatch); or per_class, each class's
               threshold rising with how many unlabelled clips the model already
               predicts confidently as that class (FlexMatch, Zhang et al. 2021:
               threshold x beta / (2 - beta), beta the class's confident count over the
               largest class's, or over the clips not yet confident while those are more)
    teacher:   the model itself, or (--ema_decay > 0) an exponential moving average of
               its weights (Mean Teacher), whose targets change more slowly

The weak forward uses the batch's own BatchNorm statistics, as the training forward does,
and leaves the running statistics alone (evaluation re-estimates them anyway). Under
torchrun every process gathers every process's predictions, so the per-class counts, and
with them the thresholds, are the same on all of them.

The hidden labels of clips outside the labelled subset (--label_fraction < 1) are read
for one thing only: the pseudo-labels' accuracy, logged beside the share of clips above
the threshold, the health signal of self-training. They never reach a loss.
"""
import copy

import torch

import augmentation
import distributed

MODES = ('off', 'fixed', 'per_class')
WEAK_VIEWS = ('none', 'time_shift')
# run-wide counts kept for results.json, in this order
COUNTS = ('unlabelled', 'confident', 'hidden', 'hidden_confident', 'hidden_confident_correct',
          'hidden_correct')


def flexmatch_thresholds(confident_class, unlabelled_count, num_classes, threshold):
    """Per-class thresholds from each unlabelled clip's last confident class
    (confident_class: -1 where none yet): class c's learning effect beta_c is its count
    over the largest count, or over the clips not yet confident while those are more (the
    warm-up: early on, every threshold starts low and rises as the model commits), mapped
    by the convex x / (2 - x). On the memory's device; the host does not wait for it."""
    known = confident_class >= 0
    counts = torch.bincount(confident_class[known], minlength=num_classes).float()
    not_yet = unlabelled_count - known.sum()
    beta = counts / torch.maximum(counts.max(), not_yet).clamp(min=1)
    return threshold * beta / (2 - beta)


@torch.no_grad()
def ema_update(teacher, student, decay):
    """teacher <- decay * teacher + (1 - decay) * student for the weights; the buffers
    (BatchNorm statistics) copied."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.lerp_(s.detach(), 1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


class frozen_batchnorm_statistics:
    """Forward passes in train mode (batch statistics) that leave every BatchNorm's running
    statistics as they were (momentum 0)."""

    def __init__(self, model):
        self.norms = [m for m in model.modules()
                      if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.momenta = [m.momentum for m in self.norms]
        for m in self.norms:
            m.momentum = 0.0
        self.tracked = [m.num_batches_tracked.clone() if m.num_batches_tracked is not None
                        else None for m in self.norms]

    def __exit__(self, *exc):
        for m, momentum, tracked in zip(self.norms, self.momenta, self.tracked):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


class PseudoLabeller:
    """The state of self-training in one run: the teacher (the model, or its moving
    average), the per-clip memory behind per-class thresholds, and run-wide counts."""

    def __init__(self, cfg, model, num_classes, unlabelled_indices, clip_count, device,
                 amp_dtype):
        self.mode, self.threshold = cfg['pseudo_labels'], cfg['pseudo_threshold']
        self.start_epoch, self.weak_view = cfg['pseudo_start_epoch'], cfg['pseudo_weak_view']
        self.ema_decay, self.num_classes = cfg['ema_decay'], num_classes
        self.sample_rate, self.device, self.amp_dtype = cfg['sample_rate'], device, amp_dtype
        self.augment_options = {k: cfg[k] for k in augmentation.DEFAULTS
                                if k.startswith('time_shift') and k in cfg}
        self.teacher = None
        if self.ema_decay > 0:
            self.teacher = copy.deepcopy(model).requires_grad_(False)
        self.unlabelled_count = len(unlabelled_indices)
        # each clip's last confident pseudo-label (-1: none yet); read by per_class
        self.confident_class = torch.full((clip_count,), -1, dtype=torch.int64, device=device)
        self.counts = torch.zeros(len(COUNTS), dtype=torch.float64, device=device)  # run-wide
        self.window = torch.zeros_like(self.counts)     # since the last validation

    def active(self, epoch):
        return epoch >= self.start_epoch

    def thresholds(self):
        """The threshold of each class now."""
        if self.mode == 'per_class':
            return flexmatch_thresholds(self.confident_class, self.unlabelled_count,
                                        self.num_classes, self.threshold)
        return torch.full((self.num_classes,), self.threshold, device=self.device)

    def after_step(self, model):
        if self.teacher is not None:
            ema_update(self.teacher, model, self.ema_decay)

    @torch.no_grad()
    def label(self, model, clean, labels, labelled, clips, generator):
        """Pseudo-labels for this process's rows: (targets, confident, logs). `model`: the
        student (unwrapped); `clean`: the un-augmented waveforms; `labels`: the rows'
        labels, hidden ones included (read only for the logged accuracy); `clips`: the
        rows' clip indices."""
        teacher = self.teacher if self.teacher is not None else model
        teacher.train()         # batch statistics, as in the training forward
        weak = clean
        if self.weak_view == 'time_shift':
            weak = augmentation.augment(clean, ['time_shift'], self.sample_rate, generator,
                                        **self.augment_options)
        with frozen_batchnorm_statistics(teacher), torch.autocast(
                self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32):
            logits = teacher(weak)['logits']
        confidence, targets = torch.softmax(logits.float(), dim=1).max(dim=1)
        unlabelled = ~labelled
        confident = (confidence >= self.thresholds()[targets]) & unlabelled
        # every process's rows, so that the memory and the counts agree everywhere
        above = (confidence >= self.threshold) & unlabelled
        rows = torch.stack([torch.as_tensor(clips, device=targets.device), targets,
                            above.long(), confident.long(), unlabelled.long(), labels])
        clip, target, above, confident_all, unlabelled_all, label = torch.cat(
            distributed.all_gather_tensors(rows), dim=1)
        above, confident_all, unlabelled_all = above.bool(), confident_all.bool(), unlabelled_all.bool()
        self.confident_class[clip[above]] = target[above]
        hidden = unlabelled_all & (label >= 0)
        hits = target == label
        counts = torch.stack([unlabelled_all.sum(), confident_all.sum(), hidden.sum(),
                              (confident_all & hidden).sum(), (confident_all & hidden & hits).sum(),
                              (hidden & hits).sum()]).double()
        self.counts += counts
        self.window += counts
        logs = {'pseudo_confident': (counts[1] / counts[0].clamp(min=1)).float()}
        return targets, confident, logs

    def window_summary(self, reset=False):
        """The share above the threshold and the pseudo-labels' accuracy since the last
        validation (reset: start a new window)."""
        summary = ratios(self.window.tolist())
        if reset:
            self.window.zero_()
        return summary

    def summary(self):
        """What results.json reports: over every step with the term, the share of
        unlabelled clips above the threshold and, where labels were hidden, the accuracy of
        those pseudo-labels (and of all the weak view's predictions); the final thresholds."""
        summary = ratios(self.counts.tolist())
        summary['pseudo_unlabelled_seen'] = int(self.counts[0])
        summary['pseudo_hidden_seen'] = int(self.counts[2])     # of them, with a hidden label
        summary['pseudo_thresholds'] = [round(t, 4) for t in self.thresholds().tolist()]
        return summary

    def state_dict(self):
        return {'confident_class': self.confident_class, 'counts': self.counts,
                'window': self.window,
                'teacher': self.teacher.state_dict() if self.teacher is not None else {}}

    def load_state_dict(self, state):
        self.confident_class.copy_(state['confident_class'])
        self.counts.copy_(state['counts'])
        self.window.copy_(state['window'])
        if self.teacher is not None:
            self.teacher.load_state_dict(state['teacher'])


def ratios(counts):
    """{share above the threshold, pseudo-label accuracy, weak-view accuracy} from COUNTS
    values; an accuracy is left out where no hidden label was there to check it, and all
    of them where no clip was labelled yet."""
    counts = dict(zip(COUNTS, counts))
    if not counts['unlabelled']:        # before --pseudo_start_epoch
        return {}
    out = {'pseudo_share_confident': counts['confident'] / counts['unlabelled']}
    if counts['hidden_confident']:
        out['pseudo_accuracy'] = counts['hidden_confident_correct'] / counts['hidden_confident']
    if counts['hidden']:
        out['pseudo_accuracy_all'] = counts['hidden_correct'] / counts['hidden']
    return out
