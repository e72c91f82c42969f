"""Helpers shared by the command-line tests."""

from keras_svre import cli


def fails_cleanly(capsys, argv, message):
    """Runs the CLI; checks exit code 2, `message` on stderr, no traceback."""
    assert cli.main(argv) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    return err
