"""The README's main job, in its --quick smoke mode (the full run is timed in benchmarks/results/)."""
import json

import pytest

from helpers import run_cli


# training the demo's own teacher (--train-teacher, not the README command) takes 40 s: slow tier
@pytest.mark.parametrize('teacher', ['reused', pytest.param('trained', marks=pytest.mark.slow)])
def test_demo_quick_writes_table_and_plot(tmp_path, teacher):
    flags = ['--train-teacher'] if teacher == 'trained' else []
    proc = run_cli(['-m', 'mixprior_plugin.demo', '--quick', '--out', str(tmp_path / 'demo')] + flags,
                   cwd=str(tmp_path))
    out = proc.stdout
    for step in ('[1/4]', '[2/4]', '[3/4]', '[4/4]'):
        assert step in out
    # by default the committed teacher is reused (no teacher training); --train-teacher trains one
    assert ('pretrained/demo_EDSR_C32B8_x4_skimage.pth' in out and '(trained on these photos' in out) == (
        teacher == 'reused')
    assert ('[teacher] done in' in out) == (teacher == 'trained')
    assert '| method | params | PSNR (dB) | SSIM | PSNR vs scratch |' in out
    results = tmp_path / 'demo' / 'results'
    rows = json.load(open(results / 'demo_results.json'))['rows']
    assert list(rows) == ['bicubic', 'teacher', 'scratch', 'Logits-KD', 'MiPKD']
    assert rows['scratch']['params'] == rows['MiPKD']['params'] < rows['teacher']['params']
    png = (results / 'demo_psnr.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n' and len(png) > 5000
    # everything under the one output folder, in BasicSR's layout
    for sub in ('options', 'experiments', 'tb_logger', 'data'):
        assert (tmp_path / 'demo' / sub).is_dir(), sub
    assert f'everything is under {tmp_path / "demo"}' in out


def test_demo_progress_reads_basicsr_iterations_with_thousands_separators():
    from mixprior_plugin.demo import progress_of
    line = ('2026-11-29 08:30:01,123 INFO: [demo_..][epoch: 12, iter:   1,200, lr:(1.000e-03,)] '
            '[eta: 0:01:10, time (data): 0.050 (0.001)] l_pix: 2.2253e-02 \n')
    assert progress_of(line) == (1200, 'l_pix: 2.2253e-02')
    assert progress_of('2026-11-29 INFO: [x..][epoch:  0, iter:     400, lr:(1.0e-03,)] [eta: 0:00:01] l_pix: 3e-02') \
        == (400, 'l_pix: 3e-02')
    assert progress_of('INFO: Saving models and training states.') is None
