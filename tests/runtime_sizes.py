"""Frame sizes the runtime tests share (small frames keep CI cheap)."""

TEST_INPUT = (320, 192)  # model input
TEST_VIDEO = (320, 180)  # video frames
