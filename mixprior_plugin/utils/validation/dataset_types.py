"""BasicSR's dataset types by what they read: the layout of their folders and what they yield."""

# Dataset types by the layout they read (BasicSR's own; others are left unchecked).
PAIRED_TYPES = {'PairedImageDataset': 'meta_info_file', 'RealESRGANPairedDataset': 'meta_info'}
SINGLE_TYPES = {'SingleImageDataset': ('dataroot_lq', 'meta_info_file'), 'FFHQDataset': ('dataroot_gt', None),
                'RealESRGANDataset': ('dataroot_gt', 'meta_info')}
VIDEO_TYPES = {  # type: meta_info_file required
    'REDSDataset': True, 'REDSRecurrentDataset': True, 'Vimeo90KDataset': True, 'Vimeo90KRecurrentDataset': True,
    'VideoTestVimeo90KDataset': True, 'VideoTestDataset': False, 'VideoTestDUFDataset': False,
    'VideoRecurrentTestDataset': False
}
# What the training dataset types of BasicSR yield, when not both LR and HR.
LR_ONLY_DATASETS = ('SingleImageDataset', )
HR_ONLY_DATASETS = ('FFHQDataset', 'RealESRGANDataset')
